//! The published JSON Schemas (`docs/schemas/*.schema.json`) against the real binary's output: every
//! command with JSON output, run against patrol-emulator after a real `patrol login`, validates against its
//! schema; the schemas themselves are valid Draft 2020-12 documents whose `$id`s match their file names.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const ID_BASE: &str = "https://github.com/patrol-dev/patrol/raw/main/docs/schemas/";

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas")
}

fn schemas() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(schema_dir()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(stem) = name.strip_suffix(".schema.json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            out.push((stem.to_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The validator of `docs/schemas/<name>.schema.json`, with the other schemas resolvable by `$ref`.
pub(crate) fn validator(name: &str) -> jsonschema::Validator {
    let all = schemas();
    let mut opts = jsonschema::options().should_validate_formats(true);
    let mut root = None;
    for (stem, v) in &all {
        if stem == name {
            root = Some(v.clone());
        }
        opts = opts.with_resource(
            format!("{ID_BASE}{stem}.schema.json"),
            jsonschema::Resource::from_contents(v.clone()).unwrap(),
        );
    }
    let root = root.unwrap_or_else(|| panic!("no docs/schemas/{name}.schema.json"));
    opts.build(&root).unwrap_or_else(|e| panic!("{name}.schema.json is not a valid schema: {e}"))
}

/// Panics with every violation when `doc` does not match `docs/schemas/<name>.schema.json`.
pub(crate) fn assert_valid(name: &str, doc: &Value) {
    let v = validator(name);
    let errors: Vec<String> = v.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path)).collect();
    assert!(errors.is_empty(), "{name} output does not match docs/schemas/{name}.schema.json:\n{}", errors.join("\n"));
}

/// JSON objects with a key twice (e.g. `"owner"` flattened into an object that already has it) are invalid
/// for many parsers and silently lose one value in others; `serde_json::Value` keeps the last, so look at
/// the text.
pub(crate) fn assert_no_duplicate_keys(text: &str) {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Strict;
    impl<'de> serde::Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor)
        }
    }
    struct StrictVisitor;
    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Strict;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Strict, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                }
                m.next_value::<Strict>()?;
            }
            Ok(Strict)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Strict, A::Error> {
            while s.next_element::<Strict>()?.is_some() {}
            Ok(Strict)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict)
        }
    }
    if let Err(e) = serde_json::from_str::<Strict>(text) {
        panic!("{e} in:\n{text}");
    }
}

#[test]
fn every_schema_is_valid_and_named_by_its_file() {
    let all = schemas();
    assert!(all.len() >= 8, "{:?}", all.iter().map(|s| &s.0).collect::<Vec<_>>());
    for (stem, v) in &all {
        assert_eq!(v["$id"], format!("{ID_BASE}{stem}.schema.json"), "{stem}");
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema", "{stem}");
        assert!(v["title"].is_string() && v["description"].is_string(), "{stem}");
        let _ = validator(stem);
    }
    // The duplicate-key check catches what a schema cannot see.
    let r = std::panic::catch_unwind(|| {
        assert_no_duplicate_keys(r#"{"owners":[{"owner":"a","health":"ok","owner":"a"}]}"#)
    });
    assert!(r.is_err());
    assert_no_duplicate_keys(r#"{"owners":[{"owner":"a","health":"ok"}]}"#);
}

fn run(dir: &Path, args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_patrol"));
    c.args(args).current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `inventory`, `plan`, `rotate`, `status`, `history` and `check` as the real binary against the emulator
/// (after a real `patrol login`): each `--format json` document validates against its schema, and a
/// second `rotate` / `history` shows what the first did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_output_validates_against_its_published_schema() {
    let (emu, _) = super::login::emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = super::login::settings(&emu, dir.path(), None);
    env.push(("PATROL_DEVOPS_URL".into(), emu.endpoints().devops.clone()));
    let (code, _, stderr) = super::login::approved_login(&emu, dir.path(), &env).await;
    assert_eq!(code, 0, "{stderr}");
    let json = |name: &str, args: &[&str], want: i32| {
        let (code, stdout, stderr) = tokio::task::block_in_place(|| run(dir.path(), args, &env));
        assert_eq!(code, want, "patrol {}: {stderr}\n{stdout}", args.join(" "));
        assert_no_duplicate_keys(&stdout);
        let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_valid(name, &v);
        v
    };
    let inv = json("inventory", &["inventory", "--format", "json"], 0);
    assert!(inv["pats"].as_array().unwrap().iter().any(|p| p["role"] == "missing"), "{inv}");
    let plan = json("plan", &["plan", "--format", "json"], 0);
    assert_eq!(plan["entries"][0]["actions"][0]["action"], "rotate", "{plan}");
    let status = json("status", &["status", "--format", "json"], 0);
    assert_eq!(status["owners"][0]["health"], "ok", "{status}");
    let rotated = json("rotate", &["rotate", "--format", "json"], 0);
    assert_eq!(rotated["rotated"], 1, "{rotated}");
    let history = json("history", &["history", "--format", "json"], 0);
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{history}");
    assert_eq!((events[0]["kind"].as_str(), events[0]["by"].as_str()), (Some("created"), Some("patrol rotate")));
    let forced = json("rotate", &["rotate", "ci-build-pat", "--force", "--format", "json"], 0);
    assert_eq!(forced["reports"][0]["rotated"]["reason"], "forced", "{forced}");
    let one = json("history", &["history", "CI-BUILD-PAT", "--format", "json"], 0);
    assert_eq!(one["events"].as_array().unwrap().len(), 2, "{one}");
    assert_eq!(one["events"][1]["kind"], "rotated");
    assert_eq!(one["events"][1]["replaced"], one["events"][0]["authorization_id"]);
    let status = json("status", &["status", "--format", "json"], 0);
    assert_eq!(status["tokens"][0]["last_rotation"]["reason"], "forced", "{status}");
    let plan = json("plan", &["plan", "--format", "json"], 0);
    assert!(plan["entries"][0]["current"]["authorization_id"].is_string(), "{plan}");
    let check = json("check", &["check", "--format", "json"], 0);
    assert_eq!((check["ok"].as_bool(), check["tokens"].as_u64()), (Some(true), Some(1)), "{check}");
    // A secret neither managed nor in the log: exit 2.
    let (code, _, stderr) = tokio::task::block_in_place(|| run(dir.path(), &["history", "nope-pat"], &env));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope-pat"), "{stderr}");
    emu.shutdown().await.unwrap();
}

fn toml_to_json(text: &str) -> Value {
    let v: toml::Value = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    serde_json::to_value(v).unwrap()
}

/// `docs/schemas/patrol.toml.schema.json` (for editors) accepts the shipped `patrol.toml`, every
/// ```toml example in the README and docs/; and refuses what patrol refuses.
#[test]
fn the_policy_schema_accepts_the_shipped_and_documented_policies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let v = validator("patrol.toml");
    let check = |what: &str, text: &str| {
        let doc = toml_to_json(text);
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| format!("{}: {e}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{what} does not match patrol.toml.schema.json:\n{}", errors.join("\n"));
    };
    check("patrol.toml", &std::fs::read_to_string(root.join("patrol.toml")).unwrap());
    let mut examples = 0;
    let mut docs: Vec<PathBuf> = vec![root.join("README.md")];
    docs.extend(std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()));
    for p in docs.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let text = std::fs::read_to_string(p).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("```toml\n") {
            let body = &rest[i + 8..];
            let end = body.find("```").unwrap();
            check(&format!("{} example {}", p.display(), examples + 1), &body[..end]);
            examples += 1;
            rest = &body[end..];
        }
    }
    assert!(examples >= 2, "the docs' policy examples were found ({examples})");
    // What patrol refuses, the schema refuses too (editors flag it as it is typed).
    for bad in [
        "[[token]]\nsecret = \"a\"\ndisplay_name = \"A\"\nvalidity_days = \"thirty\"\n",
        "[[token]]\nsecret = \"a\"\ndisplay_name = \"A\"\ncolour = \"blue\"\n",
        "[[token]]\nsecret = \"a/b\"\ndisplay_name = \"A\"\n",
        "[[token]]\nsecret = \"patrol-owner-x\"\ndisplay_name = \"A\"\n",
        "[[token]]\nsecret = \"a\"\ndisplay_name = \"A (patrol:1234)\"\n",
        "[[token]]\nsecret = \"a\"\ndisplay_name = \"A\"\nvalidity_days = 400\n",
        "[defaults]\norganization = \"fabrikam\"\n",
        "[audit.revocation]\nmode = \"blind\"\n",
        "[[token]]\nsecret = \"a\"\ndisplay_name = \"A\"\n[[token.consumer]]\nkind = \"reference\"\n",
    ] {
        assert!(!v.is_valid(&toml_to_json(bad)), "the schema accepts:\n{bad}");
    }
}
