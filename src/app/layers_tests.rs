//! The module graph stays layered: `cli` on top, then the composition root `app` (the three functions' use
//! cases live there too), then the core, with no import cycle among the top-level modules and none among
//! the files of `rotation`, `audit` or `handler`. Read from the sources: every `crate::<module>` a module's
//! non-test code names is an edge (`super::<file>` and `crate::<module>::<file>` for files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !rel.ends_with(".rs") || name.ends_with("_tests.rs") || rel == "lib.rs" || rel == "main.rs" {
                continue;
            }
            let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            // Test code may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let out = edges.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let target: String =
                    code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !target.is_empty() && target != module {
                    out.insert(target);
                }
            }
        }
    }
    edges
}

fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(m) = todo.pop() {
        for n in edges.get(&m).into_iter().flatten() {
            if n == to {
                return true;
            }
            if seen.insert(n.clone()) {
                todo.push(n.clone());
            }
        }
    }
    false
}

#[test]
fn the_layers_hold_and_no_module_is_in_an_import_cycle() {
    let edges = graph();
    let imports = |m: &str, n: &str| edges.get(m).is_some_and(|e| e.contains(n));
    assert!(edges.contains_key("app") && edges.contains_key("rotation") && edges.contains_key("audit"), "{edges:?}");

    // Nothing imports the CLI; only the CLI imports the composition root.
    for (m, out) in &edges {
        assert!(!out.contains("cli"), "{m} imports cli");
        if m != "cli" {
            assert!(!out.contains("app"), "{m} imports app: the composition root is above it");
        }
    }
    // The functions' use cases are above rotation and audit: neither reaches the handler's implementation.
    for core in ["rotation", "audit", "consumers", "notify", "store", "state", "devops", "auth"] {
        assert!(!imports(core, "handler"), "{core} imports handler");
    }
    // The handler knows the protocol, not the work.
    for upper in ["rotation", "audit", "consumers", "app"] {
        assert!(!imports("handler", upper), "handler imports {upper}");
    }

    // Audit is above rotation (its responses and break glass run the engine); rotation reads what the audit
    // log has shown through `evidence` and the `[audit]` section through `policy`, both below the two.
    assert!(!imports("rotation", "audit"), "rotation imports audit: {:?}", edges["rotation"]);
    for low in ["evidence", "policy"] {
        for high in ["rotation", "audit", "consumers", "app", "cli"] {
            assert!(!imports(low, high), "{low} imports {high}");
        }
    }

    // Settings are below the clients they configure; the clients below the sign-in that feeds them tokens.
    for (low, high) in
        [("config", "auth"), ("config", "devops"), ("devops", "auth"), ("store", "auth"), ("state", "rotation")]
    {
        assert!(!imports(low, high), "{low} imports {high}");
    }
    // patrol.toml (`policy`) and the documents in the state store (journal, deliveries, lifecycle log) are
    // below the rotation engine and the consumers that read and write them; consumers are below rotation.
    for low in ["policy", "state"] {
        for high in ["rotation", "consumers", "audit"] {
            assert!(!imports(low, high), "{low} imports {high}");
        }
    }
    assert!(!imports("consumers", "rotation"), "consumers imports rotation: {:?}", edges["consumers"]);

    // No cycles (issue 14 item 2: there were ten modules in one knot).
    for m in edges.keys() {
        assert!(!reaches(&edges, m, m), "module {m} is in an import cycle: {edges:#?}");
    }
}

/// The files of one module and the siblings each one's non-test code names (`super::x`, `crate::<module>::x`).
fn file_graph(module: &str) -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(module);
    let mut texts = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_file() && name.ends_with(".rs") && !name.ends_with("_tests.rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
            texts.insert(name.trim_end_matches(".rs").to_owned(), code);
        }
    }
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut edges = BTreeMap::new();
    for (file, code) in &texts {
        let mut out = BTreeSet::new();
        for prefix in ["super::".to_owned(), format!("crate::{module}::")] {
            for (i, _) in code.match_indices(&prefix) {
                let rest = &code[i + prefix.len()..];
                // `super::{a, b::C}` names every sibling in the braces.
                let named: Vec<String> = match rest.strip_prefix('{') {
                    Some(group) => {
                        group.split('}').next().unwrap_or_default().split(',').map(|p| ident(p.trim())).collect()
                    }
                    None => vec![ident(rest)],
                };
                out.extend(named.into_iter().filter(|n| n != file && texts.contains_key(n)));
            }
        }
        edges.insert(file.clone(), out);
    }
    edges
}

#[test]
fn the_files_of_rotation_audit_handler_and_cli_import_each_other_without_cycles() {
    let named = [
        ("rotation", &["evidence", "plan", "machine", "inventory", "engine", "verdict", "adopt", "prestage"][..]),
        ("audit", &["pass", "respond", "ingest", "rules", "weekly", "replace", "usage"][..]),
        ("handler", &["functions", "invoke"][..]),
        ("cli", &["plan", "consumers", "runtime", "rotate"][..]),
    ];
    for (module, files) in named {
        let edges = file_graph(module);
        for f in files {
            assert!(edges.contains_key(*f), "src/{module}/{f}.rs is gone: {edges:?}");
        }
        for f in edges.keys() {
            assert!(!reaches(&edges, f, f), "src/{module}/{f}.rs is in an import cycle: {edges:#?}");
        }
    }
    // The lifecycle log sits beside the journal and the delivery records, in the state store's module, and
    // patrol.toml's sections beside the policy.
    let state = file_graph("state");
    for f in ["journal", "history", "deliveries"] {
        assert!(state.contains_key(f), "src/state/{f}.rs is gone: {state:?}");
    }
    assert!(!reaches(&state, "journal", "journal") && !reaches(&state, "history", "journal"), "{state:?}");
    let policy = file_graph("policy");
    assert!(policy.contains_key("audit") && policy.contains_key("consumers"), "{policy:?}");
}
